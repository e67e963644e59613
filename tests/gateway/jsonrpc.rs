//! JSON-RPC 2.0 compliance over both transports: every example of section 7 of the
//! specification, every id type, notifications, batches and their limits, bad params.

use serde_json::{Value, json};

use crate::common::{RawWs, TestGateway, post, start};

#[derive(Clone, Copy, Debug)]
enum Transport {
    Http,
    Ws,
}

/// Sends `body` and returns the response text, or `None` when the server sent nothing.
async fn exchange(gw: &TestGateway, transport: Transport, body: &str) -> Option<String> {
    match transport {
        Transport::Http => {
            let resp = post(gw.addr(), body).await;
            if resp.status == 204 {
                assert!(resp.body.is_empty(), "204 with a body: {:?}", resp.body);
                None
            } else {
                assert!(
                    resp.status == 200 || resp.status == 413,
                    "status {} for {body}",
                    resp.status
                );
                Some(resp.body)
            }
        }
        Transport::Ws => {
            let mut ws = RawWs::connect(gw.addr()).await;
            ws.send(body).await;
            // A sentinel call after it: if its answer comes first, nothing was sent for `body`.
            ws.send(r#"{"jsonrpc":"2.0","method":"gateway.health","id":"sentinel"}"#)
                .await;
            let first = ws.recv_text().await;
            let v: Value = serde_json::from_str(&first).expect("json");
            if v.get("id") == Some(&json!("sentinel")) {
                None
            } else {
                Some(first)
            }
        }
    }
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Spec section 7, request → expected response (None: no response), ids compared as values.
fn spec_examples() -> Vec<(&'static str, Option<Value>)> {
    vec![
        // rpc call with positional parameters
        (
            r#"{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}"#,
            Some(json!({"jsonrpc": "2.0", "result": 19, "id": 1})),
        ),
        (
            r#"{"jsonrpc": "2.0", "method": "subtract", "params": [23, 42], "id": 2}"#,
            Some(json!({"jsonrpc": "2.0", "result": -19, "id": 2})),
        ),
        // rpc call with named parameters
        (
            r#"{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, "id": 3}"#,
            Some(json!({"jsonrpc": "2.0", "result": 19, "id": 3})),
        ),
        (
            r#"{"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 42, "subtrahend": 23}, "id": 4}"#,
            Some(json!({"jsonrpc": "2.0", "result": 19, "id": 4})),
        ),
        // a notification
        (
            r#"{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}"#,
            None,
        ),
        (r#"{"jsonrpc": "2.0", "method": "foobar"}"#, None),
        // rpc call of non-existent method
        (
            r#"{"jsonrpc": "2.0", "method": "foobar", "id": "1"}"#,
            Some(json!({"jsonrpc": "2.0", "error": {"code": -32601}, "id": "1"})),
        ),
        // rpc call with invalid JSON
        (
            r#"{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]"#,
            Some(json!({"jsonrpc": "2.0", "error": {"code": -32700}, "id": null})),
        ),
        // rpc call with invalid Request object
        (
            r#"{"jsonrpc": "2.0", "method": 1, "params": "bar"}"#,
            Some(json!({"jsonrpc": "2.0", "error": {"code": -32600}, "id": null})),
        ),
        // rpc call Batch, invalid JSON
        (
            r#"[
  {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
  {"jsonrpc": "2.0", "method"
]"#,
            Some(json!({"jsonrpc": "2.0", "error": {"code": -32700}, "id": null})),
        ),
        // rpc call with an empty Array
        (
            "[]",
            Some(json!({"jsonrpc": "2.0", "error": {"code": -32600}, "id": null})),
        ),
        // rpc call with an invalid Batch (but not empty)
        (
            "[1]",
            Some(json!([{"jsonrpc": "2.0", "error": {"code": -32600}, "id": null}])),
        ),
        // rpc call with invalid Batch
        (
            "[1,2,3]",
            Some(json!([
                {"jsonrpc": "2.0", "error": {"code": -32600}, "id": null},
                {"jsonrpc": "2.0", "error": {"code": -32600}, "id": null},
                {"jsonrpc": "2.0", "error": {"code": -32600}, "id": null}
            ])),
        ),
        // rpc call Batch
        (
            r#"[
        {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
        {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "get_data", "id": "9"}
    ]"#,
            Some(json!([
                {"jsonrpc": "2.0", "result": 7, "id": "1"},
                {"jsonrpc": "2.0", "result": 19, "id": "2"},
                {"jsonrpc": "2.0", "error": {"code": -32600}, "id": null},
                {"jsonrpc": "2.0", "error": {"code": -32601}, "id": "5"},
                {"jsonrpc": "2.0", "result": ["hello", 5], "id": "9"}
            ])),
        ),
        // rpc call Batch (all notifications)
        (
            r#"[
        {"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}
    ]"#,
            None,
        ),
    ]
}

/// `actual` matches `expected` where `expected` has a value; error messages and data are free,
/// but every error must carry `data.kind`.
fn assert_matches(actual: &Value, expected: &Value, request: &str) {
    match (actual, expected) {
        (Value::Array(a), Value::Array(e)) => {
            assert_eq!(a.len(), e.len(), "batch length for {request}: {actual}");
            for (x, y) in a.iter().zip(e) {
                assert_matches(x, y, request);
            }
        }
        (Value::Object(a), Value::Object(e)) => {
            assert_eq!(a.get("jsonrpc"), Some(&json!("2.0")), "{actual}");
            assert_eq!(a.get("id"), e.get("id"), "id for {request}: {actual}");
            if let Some(result) = e.get("result") {
                assert_eq!(
                    a.get("result"),
                    Some(result),
                    "result for {request}: {actual}"
                );
                assert!(a.get("error").is_none());
            }
            if let Some(err) = e.get("error") {
                assert!(a.get("result").is_none(), "{actual}");
                assert_eq!(
                    a["error"]["code"], err["code"],
                    "code for {request}: {actual}"
                );
                assert!(a["error"]["message"].is_string(), "{actual}");
                assert!(
                    a["error"]["data"]["kind"].is_string(),
                    "data.kind missing: {actual}"
                );
            }
        }
        _ => panic!("shape differs for {request}: {actual} vs {expected}"),
    }
}

#[tokio::test]
async fn specification_examples_over_both_transports() {
    let gw = start(|_| {}).await;
    for transport in [Transport::Http, Transport::Ws] {
        for (request, expected) in spec_examples() {
            let got = exchange(&gw, transport, request).await;
            match (&got, &expected) {
                (None, None) => {}
                (Some(text), Some(expected)) => assert_matches(&parse(text), expected, request),
                _ => panic!("{transport:?}: {request} → {got:?}, expected {expected:?}"),
            }
        }
    }
}

#[tokio::test]
async fn notifications_run_and_are_never_answered() {
    let gw = start(|_| {}).await;
    let before = gw.notified();
    let resp = post(
        gw.addr(),
        r#"{"jsonrpc":"2.0","method":"notify_hello","params":[1]}"#,
    )
    .await;
    assert_eq!(resp.status, 204);
    assert!(resp.body.is_empty());
    assert_eq!(gw.notified(), before + 1, "the HTTP notification ran");
    let mut ws = RawWs::connect(gw.addr()).await;
    ws.send(r#"{"jsonrpc":"2.0","method":"notify_hello"}"#)
        .await;
    ws.send(r#"{"jsonrpc":"2.0","method":"notify_hello","params":{}}"#)
        .await;
    let resp = ws.call("gateway.health", json!({})).await;
    assert_eq!(resp["result"]["ok"], true);
    assert_eq!(gw.notified(), before + 3, "the WebSocket notifications ran");
    // A notification with bad params or an unknown method is silently dropped, never answered.
    ws.send(r#"{"jsonrpc":"2.0","method":"nope"}"#).await;
    ws.send(r#"{"jsonrpc":"2.0","method":"gateway.hello","params":{"bogus":1}}"#)
        .await;
    let resp = ws.call("gateway.health", json!({})).await;
    assert!(resp.get("result").is_some());
}

#[tokio::test]
async fn every_id_type_is_echoed_exactly() {
    let gw = start(|_| {}).await;
    let ids = [
        "1",
        "0",
        "18446744073709551615",
        "18446744073709551616",
        "-1",
        "-42",
        "1.5",
        "-0.25",
        "1e3",
        "2.0",
        "\"abc\"",
        "\"\"",
        "\"with \\\"escapes\\\" \\u00e9\"",
        "\"ünïcode\"",
        "null",
    ];
    for transport in [Transport::Http, Transport::Ws] {
        for id in ids {
            let body = format!(r#"{{"jsonrpc":"2.0","method":"gateway.health","id":{id}}}"#);
            let text = exchange(&gw, transport, &body).await.expect("a response");
            let prefix = format!(r#"{{"jsonrpc":"2.0","id":{id},"#);
            assert!(
                text.starts_with(&prefix),
                "{transport:?}: id {id} not echoed exactly: {text}"
            );
            assert!(parse(&text)["result"]["ok"] == json!(true), "{text}");
            // Errors echo the id too.
            let body = format!(r#"{{"jsonrpc":"2.0","method":"nope","id":{id}}}"#);
            let text = exchange(&gw, transport, &body).await.expect("a response");
            assert!(
                text.starts_with(&prefix),
                "{transport:?}: error id {id}: {text}"
            );
        }
    }
}

#[tokio::test]
async fn malformed_requests_get_the_right_code() {
    let gw = start(|_| {}).await;
    let cases: &[(&str, i64, Value)] = &[
        (
            r#"{"jsonrpc":"1.0","method":"gateway.health","id":1}"#,
            -32600,
            json!(1),
        ),
        (r#"{"method":"gateway.health","id":1}"#, -32600, json!(1)),
        (r#"{"jsonrpc":"2.0","id":1}"#, -32600, json!(1)),
        (
            r#"{"jsonrpc":"2.0","method":null,"id":1}"#,
            -32600,
            json!(1),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"gateway.health","id":true}"#,
            -32600,
            json!(null),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"gateway.health","id":{"a":1}}"#,
            -32600,
            json!(null),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"gateway.health","id":[1]}"#,
            -32600,
            json!(null),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"gateway.health","id":1,"extra":2}"#,
            -32600,
            json!(1),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"gateway.health","params":"bar","id":7}"#,
            -32602,
            json!(7),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"gateway.health","params":3,"id":7}"#,
            -32602,
            json!(7),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"gateway.health","params":null,"id":7}"#,
            -32602,
            json!(7),
        ),
        (r#""just a string""#, -32600, json!(null)),
        ("42", -32600, json!(null)),
        ("", -32700, json!(null)),
        ("{", -32700, json!(null)),
        ("\u{0}", -32700, json!(null)),
        ("[1", -32700, json!(null)),
    ];
    for transport in [Transport::Http, Transport::Ws] {
        for (body, code, id) in cases {
            if body.is_empty() && matches!(transport, Transport::Ws) {
                // An empty WebSocket frame is still a message: it must get a parse error too.
            }
            let text = exchange(&gw, transport, body)
                .await
                .unwrap_or_else(|| panic!("no answer to {body:?}"));
            let v = parse(&text);
            assert_eq!(
                v["error"]["code"],
                json!(code),
                "{transport:?} {body:?}: {text}"
            );
            assert_eq!(v["id"], *id, "{transport:?} {body:?}: {text}");
            assert!(v["error"]["data"]["kind"].is_string(), "{text}");
        }
    }
}

#[tokio::test]
async fn batches_at_and_over_the_limit() {
    let gw = start(|c| c.gateway.max_batch = 4).await;
    for transport in [Transport::Http, Transport::Ws] {
        let call = r#"{"jsonrpc":"2.0","method":"subtract","params":[5,2],"id":1}"#;
        let at = format!("[{}]", [call; 4].join(","));
        let v = parse(&exchange(&gw, transport, &at).await.expect("answer"));
        assert_eq!(v.as_array().map(Vec::len), Some(4), "{v}");
        let before = gw.notified();
        let note = r#"{"jsonrpc":"2.0","method":"notify_hello"}"#;
        let over = format!("[{call},{note},{call},{call},{call}]");
        let v = parse(&exchange(&gw, transport, &over).await.expect("answer"));
        assert!(v.is_object(), "over the limit is one error object: {v}");
        assert_eq!(v["error"]["code"], -32600);
        assert_eq!(v["id"], Value::Null);
        assert_eq!(gw.notified(), before, "nothing in an oversized batch runs");
    }
}

#[tokio::test]
async fn bad_params_on_every_method() {
    let gw = start(|_| {}).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let hello = ws.call("gateway.hello", json!({})).await;
    let methods: Vec<String> =
        serde_json::from_value(hello["result"]["methods"].clone()).expect("methods");
    let core: Vec<&String> = methods
        .iter()
        .filter(|m| m.contains('.') && !m.starts_with("test.") && *m != "foo.get")
        .collect();
    assert!(core.len() >= 7, "{core:?}");
    // Unsubscribe methods take `[subscriptionId]`: the document says which they are.
    let doc = ws.call("rpc.discover", json!({})).await;
    let unsubscribes: Vec<String> = doc["result"]["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .filter(|m| m.get("x-unsubscribe-for").is_some())
        .filter_map(|m| m["name"].as_str().map(str::to_string))
        .collect();
    assert!(unsubscribes.contains(&"events.unsubscribe".to_string()));
    for method in core {
        let resp = ws.call(method, json!({"bogus": 1})).await;
        assert_eq!(resp["error"]["code"], -32602, "{method}: {resp}");
        assert_eq!(
            resp["error"]["data"]["kind"], "invalid_params",
            "{method}: {resp}"
        );
        assert_eq!(resp["error"]["data"]["path"], "bogus", "{method}: {resp}");
        let message = resp["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains("bogus"), "{method}: {message}");
        let positional = if unsubscribes.contains(method) {
            json!([1, 2])
        } else {
            json!(["positional"])
        };
        let resp = ws.call(method, positional).await;
        assert_eq!(
            resp["error"]["code"], -32602,
            "{method} with an array: {resp}"
        );
    }
    let resp = ws
        .call("gateway.hello", json!({"client": {"name": 5}}))
        .await;
    assert_eq!(resp["error"]["data"]["path"], "client.name", "{resp}");
    assert!(
        resp["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("expected"),
        "{resp}"
    );
    let resp = ws
        .call("events.subscribe", json!({"events": ["ok", 3]}))
        .await;
    assert_eq!(resp["error"]["data"]["path"], "events[1]", "{resp}");
    let resp = ws
        .call("events.subscribe", json!({"sessionKey": "../x"}))
        .await;
    assert_eq!(resp["error"]["data"]["path"], "sessionKey", "{resp}");
    let resp = ws.call("nope.nothing", json!({})).await;
    assert_eq!(resp["error"]["code"], -32601);
    assert_eq!(resp["error"]["data"]["kind"], "method_not_found");
}

#[tokio::test]
async fn payload_and_response_limits() {
    let gw = start(|c| c.gateway.max_payload_bytes = 4096).await;
    let big = format!(
        r#"{{"jsonrpc":"2.0","method":"subtract","params":{{"pad":"{}"}},"id":1}}"#,
        "x".repeat(5000)
    );
    let resp = post(gw.addr(), &big).await;
    assert_eq!(resp.status, 413);
    assert_eq!(resp.json()["error"]["code"], -32007);
    assert_eq!(resp.json()["error"]["data"]["kind"], "payload_too_large");

    let mut ws = RawWs::connect(gw.addr()).await;
    ws.send(&big).await;
    let v = ws.recv().await;
    assert_eq!(v["error"]["code"], -32007, "{v}");
    // The connection is still usable.
    let resp = ws.call("gateway.health", json!({})).await;
    assert_eq!(resp["result"]["ok"], true);
    let resp = ws.call("test.big", json!({"bytes": 10000})).await;
    assert_eq!(resp["error"]["code"], -32008, "{resp}");
    assert_eq!(resp["error"]["data"]["kind"], "response_too_large");
    let resp = ws.call("test.big", json!({"bytes": 100})).await;
    assert_eq!(resp["result"].as_str().map(str::len), Some(100));
}

#[tokio::test]
async fn discover_and_openrpc_route_serve_the_same_document() {
    let gw = start(|_| {}).await;
    let resp = post(
        gw.addr(),
        r#"{"jsonrpc":"2.0","method":"rpc.discover","id":1}"#,
    )
    .await;
    let doc = resp.json()["result"].clone();
    assert_eq!(doc["openrpc"], "1.3.2");
    let names: Vec<&str> = doc["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    for name in [
        "gateway.hello",
        "gateway.health",
        "gateway.status",
        "gateway.presence",
        "events.subscribe",
        "events.unsubscribe",
        "rpc.discover",
        "subtract",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let route = crate::common::http(gw.addr(), "GET", "/openrpc.json", &[], "").await;
    assert_eq!(route.status, 200);
    assert_eq!(route.json(), doc);
    let hello = post(
        gw.addr(),
        r#"{"jsonrpc":"2.0","method":"gateway.hello","id":1}"#,
    )
    .await
    .json();
    let listed: Vec<&str> = hello["result"]["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(listed, sorted);
}

#[tokio::test]
async fn a_panicking_handler_still_answers() {
    let gw = start(|_| {}).await;
    for transport in [Transport::Http, Transport::Ws] {
        let text = exchange(
            &gw,
            transport,
            r#"{"jsonrpc":"2.0","method":"test.panic","id":5}"#,
        )
        .await
        .expect("answered");
        let v = parse(&text);
        assert_eq!(v["id"], 5);
        assert_eq!(v["error"]["code"], -32603);
        assert_eq!(v["error"]["data"]["kind"], "internal");
    }
}
