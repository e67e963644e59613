//! The web console: every file of `console/` compiled into the binary, and the route that
//! serves them (`GET /` and `GET /console/<file>`) with a strict Content-Security-Policy.
//!
//! The page holds no secret, so it needs no token: the token is checked on the WebSocket and on
//! every call. The transport calls [`route`] after its Origin/Host checks, so those rules apply
//! to the console as to every other path. This module knows nothing of the transport: it takes
//! a request's method, path and headers and answers a response, or `None` for a request that is
//! not the console's.

use std::sync::OnceLock;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use sha2::{Digest, Sha256};

/// The Content-Security-Policy of every console response: scripts, styles and connections
/// from the gateway itself only, no inline script or style, no framing, no forms.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One file of the console, as compiled in.
#[derive(Debug)]
pub struct Asset {
    /// The URL path it is served at.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub bytes: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";

macro_rules! asset {
    ($file:literal, $type:expr) => {
        Asset {
            path: concat!("/console/", $file),
            content_type: $type,
            bytes: include_bytes!(concat!("../../console/", $file)),
        }
    };
}

/// Every file of the console: the page at `/` and the files it loads under `/console/`.
pub const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("../../console/index.html"),
    },
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("boot.js", JS),
    asset!("dom.js", JS),
    asset!("rpc.js", JS),
    asset!("outbox.js", JS),
    asset!("markdown.js", JS),
    asset!("toml.js", JS),
    asset!("conversation.js", JS),
    asset!("sessions.js", JS),
    asset!("panels.js", JS),
];

/// The asset served at `path`, if any (`/` is the page; `/console/index.html` is the page too).
pub fn asset(path: &str) -> Option<&'static Asset> {
    let path = if path == "/console/index.html" || path == "/console/" {
        "/"
    } else {
        path
    };
    ASSETS.iter().find(|a| a.path == path)
}

/// The `ETag` of each asset (a quoted prefix of the SHA-256 of its bytes), in [`ASSETS`] order.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| format!("\"{}\"", &hex::encode(Sha256::digest(a.bytes))[..32]))
            .collect()
    })
}

/// The `ETag` the console answers for `asset`.
pub fn etag(asset: &Asset) -> &'static str {
    ASSETS
        .iter()
        .position(|a| a.path == asset.path)
        .and_then(|i| etags().get(i))
        .map_or("\"\"", String::as_str)
}

/// Whether a request asks for a WebSocket upgrade (that `GET /` belongs to the RPC transport).
fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.headers().get_all(header::UPGRADE).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.to_ascii_lowercase().contains("websocket"))
    })
}

/// Whether `If-None-Match` names `etag` (or `*`); weak validators compare as equal.
fn not_modified<B>(req: &Request<B>, etag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// Answers `GET`/`HEAD /` (when it is not a WebSocket upgrade) with the page and `GET`/`HEAD
/// /console/<file>` with that file; `None` for every other request, which the caller routes
/// as before. Every answer carries the CSP, `nosniff`, `no-referrer`, `no-cache` and an
/// `ETag`; a matching `If-None-Match` gets `304 Not Modified` without a body.
pub fn route<B>(req: &Request<B>) -> Option<Response<Full<Bytes>>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return None;
    }
    let path = req.uri().path();
    if path == "/" && is_upgrade(req) {
        return None;
    }
    let asset = asset(path)?;
    let etag = etag(asset);
    let fresh = not_modified(req, etag);
    let mut resp = if fresh {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(Full::new(Bytes::from_static(asset.bytes)));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        r
    };
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, headers: &[(&str, &str)]) -> Option<Response<Full<Bytes>>> {
        let mut req = Request::builder().method("GET").uri(path);
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        route(&req.body(()).unwrap())
    }

    #[test]
    fn serves_the_page_and_its_files_with_the_policy() {
        let resp = get("/", &[]).unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY
        );
        assert!(
            resp.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let resp = get("/console/app.js", &[]).unwrap();
        assert_eq!(resp.headers()[header::CONTENT_TYPE], JS);
        assert!(get("/console/nothing.js", &[]).is_none());
        assert!(get("/console/../src/lib.rs", &[]).is_none());
        assert!(get("/elsewhere", &[]).is_none());
    }

    #[test]
    fn an_upgrade_and_other_methods_are_not_the_console() {
        assert!(get("/", &[("upgrade", "websocket"), ("connection", "Upgrade")]).is_none());
        let post = Request::builder().method("POST").uri("/").body(()).unwrap();
        assert!(route(&post).is_none());
    }

    #[test]
    fn a_matching_etag_is_not_modified() {
        let first = get("/console/style.css", &[]).unwrap();
        let tag = first.headers()[header::ETAG].to_str().unwrap().to_string();
        let again = get("/console/style.css", &[("if-none-match", &tag)]).unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(again.headers()[header::ETAG], tag.as_str());
        let weak = format!("\"x\", W/{tag}");
        let again = get("/console/style.css", &[("if-none-match", &weak)]).unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        let other = get("/console/style.css", &[("if-none-match", "\"other\"")]).unwrap();
        assert_eq!(other.status(), StatusCode::OK);
    }

    #[test]
    fn etags_differ_between_files() {
        let tags: std::collections::HashSet<_> = ASSETS.iter().map(etag).collect();
        assert_eq!(tags.len(), ASSETS.len());
    }
}
