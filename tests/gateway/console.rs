//! The web console over a real socket: the page and every file it loads, with the CSP and
//! the other headers; the Origin/Host rules as for every path; the WebSocket upgrade at `/`
//! untouched; no token needed for the page but still for calls; and the size budget.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;

use clawgate::config::{AuthMode, TokenConfig};
use clawgate::console::{ASSETS, CONTENT_SECURITY_POLICY};
use clawgate::rpc::Scope;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{HttpResp, RawWs, TIMEOUT, http, start};

fn header<'a>(resp: &'a HttpResp, name: &str) -> &'a str {
    resp.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header in {:?}", resp.headers))
}

fn assert_console_headers(resp: &HttpResp, what: &str) {
    assert_eq!(
        header(resp, "content-security-policy"),
        CONTENT_SECURITY_POLICY,
        "{what}"
    );
    assert_eq!(header(resp, "x-content-type-options"), "nosniff", "{what}");
    assert_eq!(header(resp, "referrer-policy"), "no-referrer", "{what}");
    assert_eq!(header(resp, "cache-control"), "no-cache", "{what}");
    assert!(header(resp, "etag").starts_with('"'), "{what}");
}

/// Every `src="…"`/`href="…"` of the page and every `from './x.js'` / `import './x.js'`
/// of its modules, as absolute paths.
fn referenced(html: &str, scripts: &[(String, String)]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for attr in ["src=\"", "href=\""] {
        for part in html.split(attr).skip(1) {
            let value = part.split('"').next().unwrap_or("");
            if value.starts_with('/') {
                out.insert(value.to_string());
            }
        }
    }
    for (_, text) in scripts {
        for marker in ["from '", "import '", "from \"", "import \""] {
            for part in text.split(marker).skip(1) {
                let quote = marker.chars().last().unwrap();
                let value = part.split(quote).next().unwrap_or("");
                if let Some(name) = value.strip_prefix("./") {
                    out.insert(format!("/console/{name}"));
                }
            }
        }
    }
    out
}

/// Whether some tag of `html` has an `on…=` attribute (an inline event handler).
fn has_event_handler(html: &str) -> bool {
    html.split('<').skip(1).any(|tag| {
        let tag = tag.split('>').next().unwrap_or("").to_ascii_lowercase();
        tag.split_whitespace().skip(1).any(|attr| {
            attr.strip_prefix("on").is_some_and(|rest| {
                rest.split('=').next().is_some_and(|n| {
                    !n.is_empty()
                        && rest.contains('=')
                        && n.chars().all(|c| c.is_ascii_alphabetic())
                })
            })
        })
    })
}

fn expected_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "text/html; charset=utf-8",
    }
}

#[tokio::test]
async fn the_page_is_served_with_a_strict_policy_and_no_inline_code() {
    let gw = start(|_| {}).await;
    let resp = http(gw.addr(), "GET", "/", &[], "").await;
    assert_eq!(resp.status, 200);
    assert_eq!(header(&resp, "content-type"), "text/html; charset=utf-8");
    assert_console_headers(&resp, "GET /");
    let html = &resp.body;
    assert!(html.contains(r#"<script type="module" src="/console/app.js"></script>"#));
    // Every <script> has a src; nothing inline, no style element or attribute.
    for part in html.split("<script").skip(1) {
        let tag = part.split('>').next().unwrap_or("");
        assert!(
            tag.contains("src=\"/console/"),
            "inline script: <script{tag}>"
        );
        assert!(part.split('>').nth(1).unwrap_or("").starts_with("</script"));
    }
    assert!(!html.contains("<style"), "a <style> element");
    assert!(!html.contains("style="), "a style attribute");
    assert!(!has_event_handler(html), "an inline event handler");
    // Nothing from another origin.
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("//cdn"));
    // HEAD: the same headers, no body.
    let head = http(gw.addr(), "HEAD", "/", &[], "").await;
    assert_eq!(head.status, 200);
    assert_console_headers(&head, "HEAD /");
    assert!(head.body.is_empty());
}

#[tokio::test]
async fn every_file_the_page_loads_is_served_with_its_type() {
    let gw = start(|_| {}).await;
    let html = http(gw.addr(), "GET", "/", &[], "").await.body;
    let mut scripts = Vec::new();
    let mut seen = BTreeSet::new();
    let mut todo = referenced(&html, &scripts);
    // Follow the module graph until no new file turns up.
    while let Some(path) = todo.iter().find(|p| !seen.contains(*p)).cloned() {
        seen.insert(path.clone());
        let resp = http(gw.addr(), "GET", &path, &[], "").await;
        assert_eq!(resp.status, 200, "{path}");
        assert_eq!(
            header(&resp, "content-type"),
            expected_type(&path),
            "{path}"
        );
        assert_console_headers(&resp, &path);
        assert!(!resp.body.is_empty(), "{path}");
        if path.ends_with(".js") {
            // No third-party origin and no eval-like construct.
            for banned in ["eval(", "new Function", "innerHTML", "document.write"] {
                assert!(!resp.body.contains(banned), "{path} uses {banned}");
            }
            scripts.push((path.clone(), resp.body.clone()));
        }
        todo = referenced(&html, &scripts);
    }
    for needed in [
        "/console/app.js",
        "/console/style.css",
        "/console/markdown.js",
    ] {
        assert!(
            seen.contains(needed),
            "{needed} not reached from the page: {seen:?}"
        );
    }
    // Every compiled-in file is reachable from the page (none is dead weight).
    for asset in ASSETS.iter().filter(|a| a.path != "/") {
        assert!(
            seen.contains(asset.path),
            "{} is not loaded by the page",
            asset.path
        );
    }
    // A revalidation gets 304 without a body.
    let first = http(gw.addr(), "GET", "/console/app.js", &[], "").await;
    let tag = header(&first, "etag").to_string();
    let again = http(
        gw.addr(),
        "GET",
        "/console/app.js",
        &[("if-none-match", &tag)],
        "",
    )
    .await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(header(&again, "etag"), tag);
    // Unknown files and other methods are not the console's.
    assert_eq!(
        http(gw.addr(), "GET", "/console/nope.js", &[], "")
            .await
            .status,
        404
    );
    assert_eq!(
        http(gw.addr(), "GET", "/console/../Cargo.toml", &[], "")
            .await
            .status,
        404
    );
    assert_eq!(
        http(gw.addr(), "PUT", "/", &[], "").await.status,
        405,
        "another method on / stays refused"
    );
}

#[test]
fn every_file_of_console_is_compiled_in() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
    let compiled: BTreeSet<&str> = ASSETS.iter().map(|a| a.path).collect();
    for entry in std::fs::read_dir(&dir).expect("console/") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_dir() {
            continue; // console/test/: the JS unit tests, not served
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = if name == "index.html" {
            "/".to_string()
        } else {
            format!("/console/{name}")
        };
        assert!(
            compiled.contains(path.as_str()),
            "console/{name} is not in the asset table"
        );
    }
}

/// One raw request with exactly these header lines; the status.
async fn raw_status(addr: SocketAddr, request_head: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(format!("{request_head}Connection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_foreign_origin_or_host_is_refused_as_for_the_rest() {
    let gw = start(|_| {}).await;
    let addr = gw.addr();
    let own = format!("http://127.0.0.1:{}", addr.port());
    for path in ["/", "/console/app.js"] {
        let ok = http(addr, "GET", path, &[("origin", &own)], "").await;
        assert_eq!(ok.status, 200, "{path} from its own origin");
        let evil = http(addr, "GET", path, &[("origin", "http://evil.example")], "").await;
        assert_eq!(evil.status, 403, "{path} from another origin");
        assert!(evil.headers.get("content-security-policy").is_none());
        // DNS rebinding: a non-loopback Host in auth mode none.
        let status = raw_status(
            addr,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: evil.example:{}\r\n",
                addr.port()
            ),
        )
        .await;
        assert_eq!(status, 403, "{path} with a foreign Host");
        let status = raw_status(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: localhost:{}\r\n", addr.port()),
        )
        .await;
        assert_eq!(status, 200, "{path} with Host localhost");
    }
}

#[tokio::test]
async fn the_websocket_upgrade_at_the_root_still_works() {
    let gw = start(|_| {}).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let health = ws.call("gateway.health", json!({})).await;
    assert_eq!(health["result"]["ok"], true, "{health}");
    // And JSON-RPC over POST / is untouched.
    let resp = crate::common::post(
        gw.addr(),
        r#"{"jsonrpc":"2.0","id":1,"method":"gateway.health"}"#,
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["result"]["ok"], true);
}

#[tokio::test]
async fn the_page_needs_no_token_but_calls_and_the_websocket_still_do() {
    let gw = start(|c| {
        c.gateway.auth.mode = AuthMode::Token;
        c.gateway.auth.tokens = vec![TokenConfig {
            name: "admin".into(),
            token: "console-secret-1".into(),
            scopes: vec![Scope::Admin],
        }];
    })
    .await;
    let addr = gw.addr();
    for path in ["/", "/console/app.js", "/console/style.css"] {
        assert_eq!(http(addr, "GET", path, &[], "").await.status, 200, "{path}");
    }
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"gateway.health"}"#;
    assert_eq!(http(addr, "POST", "/", &[], body).await.status, 401);
    assert!(RawWs::connect_with(addr, "/", &[]).await.is_err());
    // The browser's way: the token in the WebSocket URL.
    let mut ws = RawWs::connect_with(addr, "/?token=console-secret-1", &[])
        .await
        .expect("upgrade with ?token=");
    assert_eq!(
        ws.call("gateway.health", json!({})).await["result"]["ok"],
        true
    );
}

/// The gzip size of `bytes` (gzip -9), or, without a gzip program, the raw size (a bound).
fn gzip_size(bytes: &[u8]) -> usize {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("gzip")
        .args(["-9", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        return bytes.len();
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(bytes).expect("write to gzip");
    }
    let out = child.wait_with_output().expect("gzip runs");
    assert!(out.status.success(), "gzip failed");
    out.stdout.len()
}

#[test]
fn javascript_and_css_fit_in_150_kb_gzipped() {
    let mut total = 0;
    let mut raw = 0;
    for asset in ASSETS
        .iter()
        .filter(|a| a.path.ends_with(".js") || a.path.ends_with(".css"))
    {
        raw += asset.bytes.len();
        total += gzip_size(asset.bytes);
    }
    assert!(raw > 0);
    assert!(
        total <= 150 * 1024,
        "console JS + CSS is {total} bytes gzipped ({raw} raw), over 150 KB"
    );
}
