//! Authentication, scopes, origins, hosts and the connection limit.

use clawgate::config::{AuthMode, TokenConfig};
use clawgate::rpc::Scope;
use serde_json::json;

use crate::common::{RawWs, WsRefused, http, start};

fn tokens(c: &mut clawgate::config::Config) {
    c.gateway.auth.mode = AuthMode::Token;
    c.gateway.auth.tokens = vec![
        TokenConfig {
            name: "reader".into(),
            token: "reader-secret-1".into(),
            scopes: vec![Scope::Read],
        },
        TokenConfig {
            name: "writer".into(),
            token: "writer-secret-1".into(),
            scopes: vec![Scope::Write],
        },
        TokenConfig {
            name: "admin".into(),
            token: "admin-secret-1".into(),
            scopes: vec![Scope::Admin],
        },
    ];
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn the_auth_matrix() {
    let gw = start(tokens).await;
    let body = |m: &str| format!(r#"{{"jsonrpc":"2.0","method":"{m}","id":1}}"#);
    // No token, wrong token: 401 before any method runs.
    for headers in [
        vec![],
        vec![("authorization", bearer("wrong-token"))],
        vec![("authorization", "Basic abc".to_string())],
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let resp = http(gw.addr(), "POST", "/", &h, &body("gateway.health")).await;
        assert_eq!(resp.status, 401, "{headers:?}");
        assert_eq!(resp.json()["error"]["kind"], "unauthorized");
        match RawWs::connect_with(gw.addr(), "/", &h).await {
            Err(WsRefused::Status(401)) => {}
            Err(other) => panic!("expected 401, got {other:?}"),
            Ok(_) => panic!("upgrade without a valid token"),
        }
    }
    // Scopes: read < write < admin.
    let cases = [
        ("reader-secret-1", "gateway.health", None),
        ("reader-secret-1", "test.write", Some("write")),
        ("reader-secret-1", "test.admin", Some("admin")),
        ("writer-secret-1", "test.write", None),
        ("writer-secret-1", "gateway.status", None),
        ("writer-secret-1", "test.admin", Some("admin")),
        ("admin-secret-1", "test.admin", None),
        ("admin-secret-1", "test.write", None),
    ];
    for (token, method, required) in cases {
        let auth = bearer(token);
        let resp = http(
            gw.addr(),
            "POST",
            "/",
            &[("authorization", &auth)],
            &body(method),
        )
        .await;
        assert_eq!(resp.status, 200);
        let v = resp.json();
        match required {
            None => assert!(v.get("result").is_some(), "{token} {method}: {v}"),
            Some(scope) => {
                assert_eq!(v["error"]["code"], -32021, "{token} {method}: {v}");
                assert_eq!(v["error"]["data"]["kind"], "forbidden");
                assert_eq!(v["error"]["data"]["requiredScope"], scope);
            }
        }
    }
    // A browser WebSocket passes the token in the query string.
    let mut ws = RawWs::connect_with(gw.addr(), "/?token=writer-secret-1", &[])
        .await
        .expect("query token accepted");
    assert!(
        ws.call("test.write", json!({}))
            .await
            .get("result")
            .is_some()
    );
    // /healthz and /readyz need no token; /openrpc.json does.
    assert_eq!(
        http(gw.addr(), "GET", "/healthz", &[], "").await.status,
        200
    );
    assert_eq!(http(gw.addr(), "GET", "/readyz", &[], "").await.status, 200);
    assert_eq!(
        http(gw.addr(), "GET", "/openrpc.json", &[], "")
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn a_removed_token_stops_working_on_open_connections() {
    let gw = start(tokens).await;
    let mut ws = RawWs::connect_with(
        gw.addr(),
        "/",
        &[("authorization", "Bearer writer-secret-1")],
    )
    .await
    .expect("connects");
    assert!(
        ws.call("gateway.health", json!({}))
            .await
            .get("result")
            .is_some()
    );
    let mut config = (*gw.running.gateway.config()).clone();
    config.gateway.auth.tokens.retain(|t| t.name != "writer");
    gw.running.gateway.set_config(config, String::new());
    // Nothing more runs on it: the connection is closed (1008).
    ws.call_revoked("gateway.health").await;
    match RawWs::connect_with(
        gw.addr(),
        "/",
        &[("authorization", "Bearer writer-secret-1")],
    )
    .await
    {
        Err(WsRefused::Status(401)) => {}
        other => panic!("expected 401, got {:?}", other.err()),
    }
}

#[tokio::test]
async fn origins_and_hosts() {
    let gw = start(|c| c.gateway.allowed_origins = vec!["https://app.example".into()]).await;
    let port = gw.addr().port();
    let own = format!("http://127.0.0.1:{port}");
    let local = format!("http://localhost:{port}");
    let body = r#"{"jsonrpc":"2.0","method":"gateway.health","id":1}"#;
    for origin in [own.as_str(), local.as_str(), "https://app.example"] {
        let resp = http(gw.addr(), "POST", "/", &[("origin", origin)], body).await;
        assert_eq!(resp.status, 200, "{origin}");
        assert!(
            RawWs::connect_with(gw.addr(), "/", &[("origin", origin)])
                .await
                .is_ok(),
            "{origin}"
        );
    }
    for origin in ["https://evil.example", "null", "http://localhost:1"] {
        let resp = http(gw.addr(), "POST", "/", &[("origin", origin)], body).await;
        assert_eq!(resp.status, 403, "{origin}");
        match RawWs::connect_with(gw.addr(), "/", &[("origin", origin)]).await {
            Err(WsRefused::Status(403)) => {}
            other => panic!("{origin}: expected 403, got {:?}", other.err()),
        }
    }
    // DNS rebinding: in mode none, a non-loopback Host is refused.
    let resp = crate::common::http_with_host(gw.addr(), "evil.example:80", body).await;
    assert_eq!(resp, 403);
    let resp = crate::common::http_with_host(gw.addr(), &format!("localhost:{port}"), body).await;
    assert_eq!(resp, 200);
}

#[tokio::test]
async fn past_the_connection_limit_a_new_connection_gets_429() {
    let gw = start(|c| c.gateway.max_connections = 2).await;
    let _a = RawWs::connect(gw.addr()).await;
    let _b = RawWs::connect(gw.addr()).await;
    match RawWs::connect_with(gw.addr(), "/", &[]).await {
        Err(WsRefused::Status(429)) => {}
        other => panic!("expected 429, got {:?}", other.err()),
    }
    // Liveness probes are exempt: a full gateway is alive.
    let resp = http(gw.addr(), "GET", "/healthz", &[], "").await;
    assert_eq!(resp.status, 200);
    let resp = crate::common::post(
        gw.addr(),
        r#"{"jsonrpc":"2.0","id":1,"method":"gateway.health"}"#,
    )
    .await;
    assert_eq!(resp.status, 429);
    drop(_a);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        RawWs::connect_with(gw.addr(), "/", &[]).await.is_ok(),
        "a slot frees when a connection closes"
    );
}
