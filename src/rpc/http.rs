//! The HTTP side of the port: JSON-RPC over `POST /`, the health routes, and the JSON bodies
//! of the refusals every door shares.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::json;

use super::Host;
use super::auth::Refusal;
use super::context::Connection;
use super::dispatch::handle_message;
use super::wire::error_json;
use crate::error::Error;

pub use super::door::{Body, Reply, event_stream, whole};

/// A JSON response with `status`.
pub fn json_response(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// HTTP 401 (with `WWW-Authenticate: Bearer`) or 403 for a refused request.
pub fn refusal_response(refusal: Refusal) -> Response<Body> {
    match refusal {
        Refusal::Unauthorized(message) => {
            let mut resp = json_response(
                StatusCode::UNAUTHORIZED,
                json!({"error": {"kind": "unauthorized", "message": message}}).to_string(),
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            resp
        }
        Refusal::Forbidden(message) => json_response(
            StatusCode::FORBIDDEN,
            json!({"error": {"kind": "forbidden", "message": message}}).to_string(),
        ),
    }
}

/// HTTP 429 for a locked-out address.
pub fn throttled_response(retry_after_ms: u64) -> Response<Body> {
    let mut resp = json_response(
        StatusCode::TOO_MANY_REQUESTS,
        json!({"error": {"kind": "rate_limited", "retryAfterMs": retry_after_ms,
            "message": "too many failed logins from this address; retry later"}})
        .to_string(),
    );
    let secs = retry_after_ms.div_ceil(1000).max(1);
    if let Ok(value) = header::HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, value);
    }
    resp
}

/// The client's address: the peer's, or, when the peer is a trusted proxy, the last address
/// of `X-Forwarded-For` that is not one of the trusted proxies.
pub fn client_ip(trusted: &[IpAddr], peer: IpAddr, headers: &http::HeaderMap) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .unwrap_or(peer)
}

/// `GET`/`HEAD /healthz` and `/readyz`, whatever the connection count.
pub(super) fn health_route<S: Host>(
    gateway: &S,
    req: &Request<Incoming>,
) -> Option<Response<Body>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return None;
    }
    let (status, body) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, json!({"ok": true})),
        "/readyz" => {
            let checks = gateway.readiness();
            let ready = checks.values().all(|ok| *ok);
            let failing: Vec<&str> = checks
                .iter()
                .filter(|(_, ok)| !**ok)
                .map(|(k, _)| *k)
                .collect();
            let mut body = json!({"ready": ready, "checks": checks});
            if !ready {
                body["failing"] = json!(failing);
            }
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (status, body)
        }
        _ => return None,
    };
    let body = body.to_string();
    if req.method() == Method::HEAD {
        let mut resp = json_response(status, String::new());
        resp.headers_mut().insert(
            header::CONTENT_LENGTH,
            header::HeaderValue::from(body.len()),
        );
        return Some(resp);
    }
    Some(json_response(status, body))
}

/// Why a request body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Longer than the limit (`size` is the declared length, or one past the limit).
    #[error("the body is {size} bytes, more than the limit")]
    TooLarge {
        /// The declared or seen size.
        size: usize,
    },
    /// Not all there within the body timeout.
    #[error("the body did not arrive within {ms} ms (gateway.body_timeout_ms)")]
    Timeout {
        /// The timeout.
        ms: u128,
    },
    /// The connection failed while reading.
    #[error("cannot read the body: {0}")]
    Read(String),
}

/// A request's whole body, within `limit` bytes (a larger `Content-Length` is refused before
/// reading) and `timeout`; every door of the port reads its bodies with this.
pub async fn read_body(
    req: Request<Incoming>,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, BodyError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(size) = declared
        && size > limit
    {
        return Err(BodyError::TooLarge { size });
    }
    let read = tokio::time::timeout(timeout, Limited::new(req.into_body(), limit).collect());
    let Ok(read) = read.await else {
        return Err(BodyError::Timeout {
            ms: timeout.as_millis(),
        });
    };
    match read {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) => {
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err(BodyError::TooLarge {
                    size: declared.unwrap_or(limit + 1),
                });
            }
            Err(BodyError::Read(err.to_string()))
        }
    }
}

/// One JSON-RPC message as an HTTP POST: the body, within `limit` bytes and `body_timeout`,
/// handled in a task of its own; `204` when nothing is to be answered (notifications only).
pub(super) async fn http_rpc<S: Host>(
    gateway: Arc<S>,
    conn: Arc<Connection>,
    req: Request<Incoming>,
    limit: usize,
    body_timeout: Duration,
) -> Response<Body> {
    let too_large = |size| {
        json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            error_json("null", &Error::PayloadTooLarge { size, limit }),
        )
    };
    let body = match read_body(req, limit, body_timeout).await {
        Ok(body) => body,
        Err(BodyError::TooLarge { size }) => return too_large(size),
        Err(BodyError::Timeout { ms }) => {
            let mut resp = json_response(
                StatusCode::REQUEST_TIMEOUT,
                error_json(
                    "null",
                    &Error::InvalidRequest(format!(
                        "the request body did not arrive within {ms} ms (gateway.body_timeout_ms)"
                    )),
                ),
            );
            resp.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            return resp;
        }
        Err(BodyError::Read(err)) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                error_json(
                    "null",
                    &Error::Parse(format!("cannot read the body: {err}")),
                ),
            );
        }
    };
    // Spawned, so a client that hangs up mid-call cannot cut a store change in half.
    let reply =
        match tokio::spawn(async move { handle_message(&gateway, &conn, &body, None).await }).await
        {
            Ok(reply) => reply,
            Err(_) => {
                return json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    error_json("null", &Error::internal("the call failed unexpectedly")),
                );
            }
        };
    match reply.json {
        Some(json) => json_response(StatusCode::OK, json),
        None => {
            let mut resp = Response::new(Full::default());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    fn forwarded(values: &[&str]) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        for v in values {
            headers.append(
                "x-forwarded-for",
                header::HeaderValue::from_str(v).expect("header"),
            );
        }
        headers
    }

    #[test]
    fn the_client_is_the_peer_unless_the_peer_is_a_trusted_proxy() {
        let headers = forwarded(&["1.1.1.1"]);
        assert_eq!(client_ip(&[], ip("9.9.9.9"), &headers), ip("9.9.9.9"));
        let trusted = [ip("10.0.0.1"), ip("10.0.0.2")];
        assert_eq!(
            client_ip(&trusted, ip("9.9.9.9"), &headers),
            ip("9.9.9.9"),
            "an untrusted peer's header is ignored"
        );
        assert_eq!(client_ip(&trusted, ip("10.0.0.1"), &headers), ip("1.1.1.1"));
    }

    #[test]
    fn the_last_untrusted_forwarded_address_wins() {
        let trusted = [ip("10.0.0.1"), ip("10.0.0.2")];
        let headers = forwarded(&["6.6.6.6, 1.1.1.1", "10.0.0.2, junk"]);
        assert_eq!(
            client_ip(&trusted, ip("10.0.0.1"), &headers),
            ip("1.1.1.1"),
            "a spoofed first hop does not count, proxies and junk are skipped"
        );
        let only_proxies = forwarded(&["10.0.0.2"]);
        assert_eq!(
            client_ip(&trusted, ip("10.0.0.1"), &only_proxies),
            ip("10.0.0.1")
        );
        assert_eq!(
            client_ip(&trusted, ip("10.0.0.1"), &http::HeaderMap::new()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn a_throttled_answer_says_when_to_retry_in_whole_seconds() {
        for (ms, secs) in [(1, "1"), (1000, "1"), (1001, "2"), (0, "1")] {
            let resp = throttled_response(ms);
            assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(resp.headers()[header::RETRY_AFTER], secs, "{ms} ms");
        }
        let resp = refusal_response(Refusal::Unauthorized("no"));
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
